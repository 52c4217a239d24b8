import sys

from onnxnas.cli import main

sys.exit(main())
