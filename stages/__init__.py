"""The pipeline's stages, one module each, run by DVC as `python -m stages.<name>`.

This runs before a stage's own imports (torch and the rest take seconds): under DVC, the process
that started the stage is recorded and watched from now on, while it surely still exists
(`imcap.stage.watch_parent`). A SIGTERM before the stage has begun its work ends it at once.
"""

import os

from imcap.stage import watch_parent

if os.environ.get("DVC_STAGE"):
    watch_parent()
