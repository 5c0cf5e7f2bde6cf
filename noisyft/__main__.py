import sys

from noisyft.cli import main

sys.exit(main())
