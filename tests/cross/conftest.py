"""Cross-framework suite: prints the largest difference seen per quantity at the end of the run."""


def pytest_terminal_summary(terminalreporter):
    from tests.cross.tolerances import LARGEST, TOLERANCES

    if LARGEST:
        terminalreporter.write_sep("-", "largest PT/TF difference per quantity (tests/cross)")
        for quantity, diff in sorted(LARGEST.items()):
            tol = TOLERANCES[quantity]
            terminalreporter.write_line(f"{quantity:>18}: {diff:.3e}  (atol {tol.atol:g}, rtol {tol.rtol:g})")
