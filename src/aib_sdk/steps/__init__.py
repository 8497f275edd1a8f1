"""Built-in step types: AIB's Linux steps (``linux``) and Windows steps (``windows``)."""
