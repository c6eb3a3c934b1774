"""Exploration: the cached 2-D map, what the report and dashboard show (``data``), their figures
and tables (``views``), the HTML report and the dashboard's Streamlit pieces (``app``)."""
