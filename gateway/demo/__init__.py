"""The demo page: a static, dependency-free web page for trying the API in a browser."""
