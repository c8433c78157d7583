"""The ground floor every layer may import: settings, version, repository paths.

Nothing here imports another Eddy package.
"""

from config.settings import REPO_ROOT, Settings, __version__

__all__ = ["REPO_ROOT", "Settings", "__version__"]
