# The scoring output, queryable in place (tables contract v2): external tables over the files in
# the tables bucket, and the four views analysts query.
#
#   predictions_files, errors_files  every Parquet file under predictions/ and errors/; the Hive
#                                    keys run_date (DATE) and run_id come from the folder names
#                                    run_date=YYYY-MM-DD/run_id=<id>/ only (never file columns)
#   runs_files                       the run summaries runs/<run_id>.json, one JSON object per
#                                    line; a summary that does not parse is skipped
#   runs                             one row per run summary (failure records, status failed, too)
#   predictions, errors              rows of the part files a run's summary names, matched with
#                                    the _FILE_NAME pseudo-column: a stray or foreign file, or an
#                                    attempt's leftovers, is never counted
#   predictions_current              the latest complete run of status ok of each run_date (reruns,
#                                    backfills; a run that failed its check is never current)
#
# Schemas are generated from the contracts (components/contracts/schema.py, summary.py; kept
# current by tests), so BigQuery reads exactly what `fmnist score` writes:
#   runs_files         external_data_configuration.schema = infra/bigquery/runs.schema.json
#   *_files (Parquet)  no schema in the configuration at all: a Parquet external table takes its
#                      columns from a Parquet file. The provider documents
#                      external_data_configuration.schema as "disallowed for ... Parquet", and a
#                      top-level `schema` beside hive_partitioning_options is what its open reports
#                      describe as dropping the partition columns (hashicorp/terraform-provider-google
#                      #8717, #6856) or forcing a replacement on every plan (#10919). Instead,
#                      reference_file_schema_uri names a zero-row Parquet file written from the
#                      contract (infra/bigquery/<table>.reference.parquet, uploaded below), so the
#                      table is the same before the first run as after, and the configuration holds
#                      only plain strings that read back unchanged: nothing to diff, nothing to replace.
#                      The Hive keys come from the CUSTOM prefix, as before.
# External tables hold no data: deletion_protection is off for them, so that a contract change
# that does replace one applies instead of failing. The views keep their protection.
# The class names of true_class are those of components/constants.py (a test compares).
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

# The zero-row Parquet files whose schema the external tables take (outside the tables'
# prefixes, so no reader ever lists them as parts).
resource "google_storage_bucket_object" "reference_schema" {
  for_each     = toset(["predictions", "errors"])
  bucket       = google_storage_bucket.tables.name
  name         = "_schemas/${each.key}.parquet"
  source       = "${path.module}/../bigquery/${each.key}.reference.parquet"
  content_type = "application/vnd.apache.parquet"

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "files" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the Parquet files' bucket is the place for encryption
  # checkov:skip=CKV_GCP_121: an external table is a definition over the bucket's files; replacing it on a contract change loses no data, and protection would make that apply fail
  for_each = {
    predictions = "Every prediction part file (use the predictions view: it counts complete runs only)."
    errors      = "Every error part file (use the errors view: it counts complete runs only)."
  }
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "${each.key}_files"
  description         = each.value
  deletion_protection = false

  external_data_configuration {
    source_format             = "PARQUET"
    autodetect                = true
    source_uris               = ["${local.tables_uri}/${each.key}/*"]
    reference_file_schema_uri = "gs://${google_storage_bucket_object.reference_schema[each.key].bucket}/${google_storage_bucket_object.reference_schema[each.key].name}"

    # probabilities is a standard Parquet LIST: read as REPEATED FLOAT.
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

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "runs_files" {
  # checkov:skip=CKV_GCP_80: an external table stores no data in BigQuery; the summaries' bucket is the place for encryption
  # checkov:skip=CKV_GCP_121: an external table is a definition over the bucket's files; a new runs.schema.json replaces it (the provider's rule for this field) and loses no data
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "runs_files"
  description         = "Every run summary runs/<run_id>.json (one line each); use the runs view."
  deletion_protection = false

  external_data_configuration {
    source_format = "NEWLINE_DELIMITED_JSON"
    autodetect    = false
    source_uris   = ["${local.tables_uri}/runs/*.json"]
    # The run summary's schema, generated from components/contracts/summary.py. In the
    # configuration, not top-level: the provider's documented place for a JSON external table.
    schema                = file("${path.module}/../bigquery/runs.schema.json")
    ignore_unknown_values = true
    # A summary that does not parse is one bad record: skipped, never fatal to every query.
    max_bad_records = 1000000
  }

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "runs" {
  # checkov:skip=CKV_GCP_80: a view stores no data; the summaries' bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "runs"
  description         = "One row per run summary: its date, model, counts, status and part files; failure records (status failed) too."
  deletion_protection = true
  view {
    use_legacy_sql = false
    # The columns of `fmnist query`'s runs view, plus the part files the other views match.
    query = <<-SQL
      SELECT run_id, run_date, status, model_version,
             counts.read AS read, counts.scored AS scored, counts.failed AS failed, counts.expected AS expected,
             error_rate, timings.started_at AS started_at, timings.finished_at AS finished_at,
             failure.task AS failed_task, failure.exit_code AS exit_code, failure.error AS last_error,
             failure.pipeline_job AS pipeline_job, parts
      FROM `${local.dataset}.${google_bigquery_table.runs_files.table_id}`
      WHERE run_id IS NOT NULL AND run_date IS NOT NULL
    SQL
  }

  depends_on = [google_project_service.apis]
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

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "predictions_current" {
  # checkov:skip=CKV_GCP_80: a view stores no data; the Parquet files' bucket is the place for encryption
  dataset_id          = google_bigquery_dataset.fmnist.dataset_id
  table_id            = "predictions_current"
  description         = "The predictions of the latest complete run of status ok of each run_date: a rerun or backfill replaces, never adds."
  deletion_protection = true
  view {
    use_legacy_sql = false
    query          = <<-SQL
      SELECT predictions.*
      FROM `${local.dataset}.${google_bigquery_table.named_parts["predictions"].table_id}` AS predictions
      JOIN (
        SELECT run_date, ARRAY_AGG(run_id ORDER BY finished_at DESC, run_id DESC LIMIT 1)[OFFSET(0)] AS run_id
        FROM `${local.dataset}.${google_bigquery_table.runs.table_id}`
        WHERE status = 'ok'
        GROUP BY run_date
      ) AS latest USING (run_date, run_id)
    SQL
  }

  depends_on = [google_project_service.apis]
}
