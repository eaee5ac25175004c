import sys

from plugins.medical.tool import main

sys.exit(main())
