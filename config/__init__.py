"""nsm_forwarder.config - the typed forwarder settings and the one function that builds them.

Modules, each importing only the ones before it:

* :mod:`~nsm_forwarder.config.gotypes` - Go-compatible bool and duration parsing and formatting;
* :mod:`~nsm_forwarder.config.fields` - the field types (pydantic validators) of the model;
* :mod:`~nsm_forwarder.config.settings` - the :class:`Settings` model;
* :mod:`~nsm_forwarder.config.describe` - env var and flag names, :func:`describe`,
  :func:`as_log_dict`, secret masking;
* :mod:`~nsm_forwarder.config.errors` - :class:`SettingsError` and its one-line messages;
* :mod:`~nsm_forwarder.config.loader` - the environment and TOML sources, :func:`load_settings`.

The package itself imports none of them: import from the module (a worker process needs only
:mod:`~nsm_forwarder.config.faults`, the fault plan syntax, which stands apart, and so does not
load pydantic).
"""
