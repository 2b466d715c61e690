"""The builder: packing a project (client side), bundles (safe extract, store), the
environments a version runs in and their builds (:mod:`modelhost.builder.builds`)."""
