# The endpoint: predictQuality(features) for one row of 11 numbers, in the order of the CSV's
# columns. modelhost sources this file once per instance, so the model loads once.
#
#   curl -X POST .../models/wine-quality-r/latest/model -H 'Content-Type: application/json' \
#        -d '{"parameters": [[5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]]}'

suppressPackageStartupMessages(library(randomForest))
load("results/classifier.Rda")  # clf and cols, written by train.R

predictQuality <- function(features) {
  values <- unlist(features)
  if (!is.numeric(values) || length(values) != length(cols)) {
    stop(sprintf("features must be %d numbers in the order: %s", length(cols),
                 paste(cols, collapse = ", ")))
  }
  row <- as.data.frame(t(values))
  colnames(row) <- cols
  as.integer(as.character(predict(clf, row)))
}
