"""OCI registries: bundles as artifacts (``bundle``/``sync --from oci://…``) and the ready
cache as an image (``hubpin image``), over the distribution protocol in :mod:`.client`."""
