-- The Granary catalog lives beside Airflow's metadata database.
CREATE DATABASE granary OWNER airflow;
