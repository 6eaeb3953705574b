"""Job lifecycle shared by the API and the workers."""
