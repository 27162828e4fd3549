"""Derivative outputs: file names and atomic writers."""
