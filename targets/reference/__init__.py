"""The compliant reference ePHI service and its named defects."""
