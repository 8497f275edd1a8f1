"""Template models: AIB's schema as pydantic models, and the loader for every template form."""
