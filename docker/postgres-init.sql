-- Second database on the compose PostgreSQL server: Optuna studies (the first, mlflow,
-- is the MLflow backend store, created from POSTGRES_DB).
CREATE DATABASE optuna;
