"""The built wheel, installed as a user installs it, in fresh virtual environments (`make test-wheel`).

`run.py` builds the wheel and the sdist, installs the wheel into `.venv-wheel-core`, `-torch` and
`-tf` (one extra each) and runs `smoke.py` there, outside the checkout. `smoke.py` is a plain script
(no pytest, nothing from this repository imported): it only sees what the wheel installed.
"""
