"""``python -m k8s_step_operator.cli``: the same command as ``k8s-step-operator``."""

import sys

from k8s_step_operator.cli import main

sys.exit(main())
