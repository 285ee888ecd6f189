"""`billing-pipeline dev`: the whole system on one machine, started and stopped as one."""
