"""A small package the end-to-end tests open: its files are the regression prompts of a repair."""
