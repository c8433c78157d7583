from eddy.cli import main

main()
