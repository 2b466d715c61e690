# Train a random forest on the wine-quality data and save it to results/classifier.Rda.
#
#   Rscript train.R [path/to/winequality-red.csv]
#
# By default it reads the CSV shipped with the Python example (../wine_quality/data/).

suppressPackageStartupMessages(library(randomForest))

script_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
here <- if (length(script_arg)) dirname(normalizePath(sub("^--file=", "", script_arg))) else "."
args <- commandArgs(trailingOnly = TRUE)
csv <- if (length(args)) args[[1]] else file.path(here, "..", "wine_quality", "data", "winequality-red.csv")

df <- read.csv(csv, header = TRUE, sep = ";")
df$quality <- factor(df$quality)
cols <- names(df)[1:11]

set.seed(0)
started <- Sys.time()
clf <- randomForest(quality ~ ., data = df[, c(cols, "quality")], ntree = 30, nodesize = 4, mtry = 8)
cat(sprintf("trained in %.1f s; out-of-bag error %.3f\n",
            as.numeric(Sys.time() - started, units = "secs"), clf$err.rate[clf$ntree, "OOB"]))

dir.create(file.path(here, "results"), showWarnings = FALSE)
save(clf, cols, file = file.path(here, "results", "classifier.Rda"))
cat("saved", file.path(here, "results", "classifier.Rda"), "\n")
