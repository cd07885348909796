"""``webbuild serve``'s HTTP side: the Starlette app (app), the OpenAI routes (routes), the error envelope
(errors), static site files (static), Prometheus metrics (metrics) and the OpenAPI document (openapi)."""
