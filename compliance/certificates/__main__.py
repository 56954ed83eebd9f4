"""`python -m compliance.certificates CERT --key VKEY`: the offline verifier (see offline.py)."""

import sys

from compliance.certificates.offline import main

sys.exit(main())
