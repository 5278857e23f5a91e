"""excelitas instruments."""
