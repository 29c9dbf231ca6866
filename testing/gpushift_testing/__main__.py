"""`python -m gpushift_testing up --workdir DIR`: same as gpushift_testing.controlplane."""

import sys

from gpushift_testing.controlplane import main

sys.exit(main())
