"""The builder: bundles (snapshot, safe extract, store) and the check that a version loads."""
