"""End-to-end tests: the example services, the analyzer, Prometheus and Alertmanager, all real."""
