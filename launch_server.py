"""The OpenAI-compatible server with the plugin registry: ``python launch_server.py [flags]`` (``./run.sh serve``).

The same command line as ``python -m assistant.serve`` (``--help`` lists it); here ``--plugins``
names registry plugins (built-ins and entry points) that the server runs itself for requests that
bring no tools of their own. A thin shell, like ``launch_ui.py``: ``assistant/`` knows nothing of
``plugins/``, so the two meet here.
"""

from __future__ import annotations

import sys

from assistant.serve import main
from plugins.registry import select_plugins

if __name__ == "__main__":
    sys.exit(main(resolve_plugins=select_plugins))
