"""Annotation (标注): labels with sources and confidence, likely errors, people in the loop."""
