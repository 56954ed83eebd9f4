"""`python -m proofs CERT --key VKEY`: the offline verifier (see offline.py)."""

import sys

from proofs.offline import main

sys.exit(main())
