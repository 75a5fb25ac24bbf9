"""The configuration file: the models of every section (base, models, rules,
observability) and the loader that reads YAML into them with line numbers
(loader)."""
