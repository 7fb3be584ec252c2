"""Kaggle Models as the installed kagglehub (1.0.3, on kagglesdk 0.1.38) sees them.

tfhub.dev now redirects every model to Kaggle Models, so a lock has to be able
to pin a Kaggle model's *version*, fetch gated models with the user's Kaggle
credentials, and leave the files where unmodified ``kagglehub.model_download``
finds them offline. Everything here follows kagglehub's own source rather
than Kaggle's documentation, because kagglehub is what users' code runs:

- :mod:`.handle`: handles, ``<owner>/<model>/<framework>/<variation>[/<version>]``
  (kagglehub/handle.py:170-200), written ``kaggle:...`` or as a model URL, and the
  version a lock pins for one;
- :mod:`.endpoint`: where the API is (``kaggle_endpoint``, ``KAGGLE_API_ENDPOINT``,
  ``KAGGLE_API_ENVIRONMENT``) and its RPC URLs, ``<endpoint>/api/v1/<Service>/<Method>``
  (``<endpoint>/v1/...`` on api.kaggle.com; kagglesdk/kaggle_http_client.py:288-294);
- :mod:`.credentials`: credentials in kagglehub's order (kagglehub/config.py:62-103,
  kagglesdk/kaggle_env.py:91-115, kagglesdk/kaggle_http_client.py:264-286);
- :mod:`.api`: the two API calls hubpin makes, JSON POSTs with camelCase fields and the
  framework as its enum name (kagglesdk/kaggle_object.py:36-58), and their errors.

kagglehub's cache is :mod:`hubpin.cache.kagglehub`. No TensorFlow, no network at import;
the HTTP layer is passed in (:class:`hubpin.kaggle.api.Request`).
"""
