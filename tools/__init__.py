"""Developer tools above the services: the development stack, sample images, evaluation,
training and model conversion. Imported by the CLI, the ETL and the benchmarks; never by the
gateway, the workers or `shared`."""
