"""Refign: align and refine for UDA semantic segmentation."""
