# The scoring output, queryable in place: external tables over the Parquet files in the tables
# bucket. Column schemas are generated from components/schema.py (infra/bigquery/*.json, kept
# current by a test), so BigQuery reads exactly what `fmnist score` writes.
#
# Hive partitioning: BigQuery refuses partition keys that are also columns in the files, and
# run_id is both (a file column and the run_id=<id> folder). So run_date is the Hive partition
# key here (from the run_date=YYYY-MM-DD folder; queries must filter on it) and run_id comes
# from the files.
resource "google_bigquery_dataset" "fmnist" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; the dataset holds only external table definitions, the data stays in the tables bucket
  dataset_id                 = "fmnist"
  location                   = var.region
  description                = "Fashion-MNIST batch scoring output (external tables over gs://${var.project_id}-tables)."
  delete_contents_on_destroy = false

  depends_on = [google_project_service.apis]
}

# predictions: one row per scored image; errors: one row per record that could not be scored.
resource "google_bigquery_table" "scoring" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the Parquet files' bucket is the place for encryption
  for_each = {
    predictions = "One row per scored image; partitioned by run_date (see docs/prediction_table.md)."
    errors      = "One row per record that could not be scored, with the reason; partitioned by run_date."
  }
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = each.key
  description         = each.value
  deletion_protection = true
  schema              = file("${path.module}/../bigquery/${each.key}.schema.json")

  external_data_configuration {
    source_format = "PARQUET"
    autodetect    = false
    source_uris   = ["gs://${google_storage_bucket.tables.name}/${each.key}/*"]

    # probabilities is a standard Parquet LIST: read as REPEATED FLOAT, as the schema says.
    parquet_options {
      enable_list_inference = true
    }

    hive_partitioning_options {
      mode                     = "CUSTOM"
      source_uri_prefix        = "gs://${google_storage_bucket.tables.name}/${each.key}/{run_date:DATE}"
      require_partition_filter = true
    }
  }
}
