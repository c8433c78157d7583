"""The ground floor every layer may import: settings, version, repository paths.

Nothing here imports another Eddy package.
"""

from config.settings import MAX_RECORD_BYTES, REPO_ROOT, Settings, __version__

__all__ = ["MAX_RECORD_BYTES", "REPO_ROOT", "Settings", "__version__"]
