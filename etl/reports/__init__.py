"""The three analyses (bottlenecks, acceptance, retries), their charts and the HTML/JSON."""
