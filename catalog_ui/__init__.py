"""The Streamlit catalog: find a hosted model, fill its form, launch, watch, get results."""
