"""The hot paths one at a time: the booking write path on the databases, publish and consume
on the brokers, sending email. `python -m bench.hotpaths.<name> --help`."""
