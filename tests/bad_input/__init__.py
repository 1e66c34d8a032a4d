"""Bad input at every public entry point: each case names its culprit and leaves files as they were."""
