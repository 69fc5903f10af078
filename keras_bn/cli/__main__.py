"""`python -m keras_bn.cli`: the same as the `keras-bn` script."""

import sys

from keras_bn.cli.app import main

sys.exit(main())
