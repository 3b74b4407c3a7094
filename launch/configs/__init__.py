"""The reproduction configs (``--config=launch/configs/<name>.py``)."""
