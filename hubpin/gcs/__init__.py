"""Google Cloud Storage, through gcsfs (the ``gcs`` extra), imported only when used.

- :mod:`hubpin.gcs.client`: the shared gcsfs client, its requests and one-line errors;
- :mod:`hubpin.gcs.pins`: UNCOMPRESSED models, pinned per object and checked for drift.

The ``gs://`` cache is :mod:`hubpin.cache.store` over :mod:`hubpin.storage.gcs`.
"""
