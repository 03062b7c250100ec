"""Pictures for people: segmentations with legends, overviews, flows and alignment panels."""
