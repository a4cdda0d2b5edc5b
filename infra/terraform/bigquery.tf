# The scoring output, queryable in place (tables contract v2): external tables over the files in
# the tables bucket, and the four views analysts query.
#
#   predictions_files, errors_files  every Parquet file under predictions/ and errors/; the Hive
#                                    keys run_date (DATE) and run_id come from the folder names
#                                    run_date=YYYY-MM-DD/run_id=<id>/ only (never file columns)
#   runs_files                       the run summaries runs/<run_id>.json, one JSON object per
#                                    line; a summary that does not parse is skipped
#   runs                             one row per complete run (it has a summary)
#   predictions, errors              rows of the part files a run's summary names, matched with
#                                    the _FILE_NAME pseudo-column: a stray or foreign file, or an
#                                    attempt's leftovers, is never counted
#   predictions_current              the latest complete run of each run_date (reruns, backfills)
#
# Column schemas of the Parquet tables are generated from components/contracts/schema.py
# (infra/bigquery/*.json, kept current by a test), so BigQuery reads exactly what `fmnist score`
# writes. The class names of true_class are those of components/constants.py (a test compares).
resource "google_bigquery_dataset" "fmnist" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; the dataset holds only external table definitions and views, the data stays in the tables bucket
  dataset_id                 = "fmnist"
  location                   = var.region
  description                = "Fashion-MNIST batch scoring output (external tables and views over gs://${var.project_id}-tables)."
  delete_contents_on_destroy = false

  depends_on = [google_project_service.apis]
}

locals {
  tables_uri  = "gs://${google_storage_bucket.tables.name}"
  dataset     = "${var.project_id}.${google_bigquery_dataset.fmnist.dataset_id}"
  class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
  true_class  = "[${join(", ", [for name in local.class_names : "'${name}'"])}][SAFE_OFFSET(true_label)]"
}

resource "google_bigquery_table" "files" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the Parquet files' bucket is the place for encryption
  for_each = {
    predictions = "Every prediction part file (use the predictions view: it counts complete runs only)."
    errors      = "Every error part file (use the errors view: it counts complete runs only)."
  }
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "${each.key}_files"
  description         = each.value
  deletion_protection = true
  schema              = file("${path.module}/../bigquery/${each.key}.schema.json")

  external_data_configuration {
    source_format = "PARQUET"
    autodetect    = false
    source_uris   = ["${local.tables_uri}/${each.key}/*"]

    # probabilities is a standard Parquet LIST: read as REPEATED FLOAT, as the schema says.
    parquet_options {
      enable_list_inference = true
    }

    # The views pick the partitions through the runs' summaries; a filter on run_date in a
    # query still limits the files BigQuery reads.
    hive_partitioning_options {
      mode                     = "CUSTOM"
      source_uri_prefix        = "${local.tables_uri}/${each.key}/{run_date:DATE}/{run_id:STRING}"
      require_partition_filter = false
    }
  }
}

resource "google_bigquery_table" "runs_files" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the summaries' bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "runs_files"
  description         = "Every run summary runs/<run_id>.json (one line each); use the runs view."
  deletion_protection = true
  # The fields the views and analysts use; other summary fields are ignored.
  schema = jsonencode([
    { name = "schema_version", type = "STRING", mode = "NULLABLE" },
    { name = "run_id", type = "STRING", mode = "NULLABLE" },
    { name = "run_date", type = "DATE", mode = "NULLABLE" },
    { name = "status", type = "STRING", mode = "NULLABLE", description = "ok; error_rate_exceeded or source_mismatch: published, but failed its check" },
    { name = "model_version", type = "STRING", mode = "NULLABLE" },
    { name = "model_uri", type = "STRING", mode = "NULLABLE" },
    { name = "attempt", type = "STRING", mode = "NULLABLE" },
    { name = "error_rate", type = "FLOAT", mode = "NULLABLE" },
    { name = "max_error_rate", type = "FLOAT", mode = "NULLABLE" },
    { name = "runner", type = "STRING", mode = "NULLABLE" },
    { name = "counts", type = "RECORD", mode = "NULLABLE", fields = [
      { name = "read", type = "INTEGER", mode = "NULLABLE" },
      { name = "scored", type = "INTEGER", mode = "NULLABLE" },
      { name = "failed", type = "INTEGER", mode = "NULLABLE" },
      { name = "expected", type = "INTEGER", mode = "NULLABLE" },
    ] },
    { name = "inputs", type = "RECORD", mode = "NULLABLE", fields = [
      { name = "glob", type = "STRING", mode = "NULLABLE" },
      { name = "shards", type = "STRING", mode = "REPEATED" },
    ] },
    { name = "parts", type = "RECORD", mode = "NULLABLE", fields = [
      { name = "predictions", type = "STRING", mode = "REPEATED" },
      { name = "errors", type = "STRING", mode = "REPEATED" },
    ] },
    { name = "timings", type = "RECORD", mode = "NULLABLE", fields = [
      { name = "started_at", type = "TIMESTAMP", mode = "NULLABLE" },
      { name = "finished_at", type = "TIMESTAMP", mode = "NULLABLE" },
    ] },
  ])

  external_data_configuration {
    source_format         = "NEWLINE_DELIMITED_JSON"
    autodetect            = false
    source_uris           = ["${local.tables_uri}/runs/*.json"]
    ignore_unknown_values = true
    # A summary that does not parse is one bad record: skipped, never fatal to every query.
    max_bad_records = 1000000
  }
}

resource "google_bigquery_table" "runs" {
  # checkov:skip=CKV_GCP_80: a view stores no data; the summaries' bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "runs"
  description         = "One row per complete scoring run: its date, model, counts, status and part files."
  deletion_protection = true
  view {
    use_legacy_sql = false
    # The columns of `fmnist query`'s runs view, plus the part files the other views match.
    query = <<-SQL
      SELECT run_id, run_date, status, model_version,
             counts.read AS read, counts.scored AS scored, counts.failed AS failed, counts.expected AS expected,
             error_rate, timings.started_at AS started_at, timings.finished_at AS finished_at, parts
      FROM `${local.dataset}.${google_bigquery_table.runs_files.table_id}`
      WHERE run_id IS NOT NULL AND run_date IS NOT NULL
    SQL
  }
}

# predictions and errors: the rows of exactly the part files a complete run's summary names.
resource "google_bigquery_table" "named_parts" {
  # checkov:skip=CKV_GCP_80: a view stores no data; the Parquet files' bucket is the place for encryption
  for_each = {
    predictions = "One row per scored image of a complete run (true_class named from true_label)."
    errors      = "One row per record of a complete run that could not be scored, with the reason."
  }
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = each.key
  description         = each.value
  deletion_protection = true
  view {
    use_legacy_sql = false
    query          = <<-SQL
      SELECT files.* EXCEPT (part_file)${each.key == "predictions" ? ", ${local.true_class} AS true_class" : ""}
      FROM (
        SELECT *, _FILE_NAME AS part_file
        FROM `${local.dataset}.${google_bigquery_table.files[each.key].table_id}`
      ) AS files
      JOIN (
        SELECT runs.run_id, part_file
        FROM `${local.dataset}.${google_bigquery_table.runs.table_id}` AS runs, UNNEST(runs.parts.${each.key}) AS part_file
      ) AS named USING (run_id, part_file)
    SQL
  }
}

resource "google_bigquery_table" "predictions_current" {
  # checkov:skip=CKV_GCP_80: a view stores no data; the Parquet files' bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "predictions_current"
  description         = "The predictions of the latest complete run of each run_date: a rerun or backfill replaces, never adds."
  deletion_protection = true
  view {
    use_legacy_sql = false
    query          = <<-SQL
      SELECT predictions.*
      FROM `${local.dataset}.${google_bigquery_table.named_parts["predictions"].table_id}` AS predictions
      JOIN (
        SELECT run_date, ARRAY_AGG(run_id ORDER BY finished_at DESC, run_id DESC LIMIT 1)[OFFSET(0)] AS run_id
        FROM `${local.dataset}.${google_bigquery_table.runs.table_id}`
        GROUP BY run_date
      ) AS latest USING (run_date, run_id)
    SQL
  }
}
