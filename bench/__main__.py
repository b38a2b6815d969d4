"""python -m bench [options]      the whole benchmark (what `make bench` runs)
python -m bench profile [-n N]   cProfile of one vnet apply at N endpoints, in a sandbox"""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "profile":
    from bench.profile import main
    sys.exit(main(sys.argv[2:]))

from bench.run import main

sys.exit(main(sys.argv[1:]))
