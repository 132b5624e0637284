"""The services, one folder each. `airbourne.services.registry` lists them for the runtime;
this package imports none of them, so loading one service never loads the others."""
