"""Job types shipped with jobbridge (examples that the tests and the local stack run)."""
