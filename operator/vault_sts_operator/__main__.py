import sys

from vault_sts_operator.cli import main

sys.exit(main())
