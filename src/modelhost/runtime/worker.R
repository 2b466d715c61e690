# An R instance: sources the user's script once, then answers calls on a loopback socket.
#
# Started by the backend as
#   Rscript --vanilla worker.R --port PORT --spec JSON
# It speaks the same framed protocol as worker.py (see protocol.py): a 5-byte header
# (payload length, big-endian uint32; message type, one byte) and the payload. It needs only
# R and jsonlite. stdout and stderr go to the instance log.

READY <- 1L
LOAD_FAILED <- 2L
CALL <- 3L
RESULT <- 4L
ERROR <- 5L
SHUTDOWN <- 6L
BATCH <- 7L
BAD_SHAPE <- paste(
  "Request body must be a JSON object with a 'data' object (keyword arguments) or a",
  "'parameters' array (positional arguments)."
)
BOTH_SHAPES <- paste(
  "Request body has both 'data' and 'parameters'; send one of them: a 'data' object",
  "(keyword arguments) or a 'parameters' array (positional arguments)."
)

shape_error <- function(keys) {
  # The 400 for a body with neither or both of 'data' and 'parameters'.
  both <- "data" %in% keys && "parameters" %in% keys
  call_error(400L, "bad_request", if (both) BOTH_SHAPES else BAD_SHAPE)
}

stamp <- function() format(Sys.time(), "%Y-%m-%dT%H:%M:%OS3Z", tz = "UTC")

log_line <- function(...) {
  cat(stamp(), " stderr [modelhost] ", ..., "\n", sep = "", file = stderr())
}

# The user's printed output and messages, captured and written with a timestamp each line.
user_lines <- function(stream, lines) {
  if (length(lines)) cat(paste0(stamp(), " ", stream, " ", lines, "\n"), sep = "",
                         file = if (stream == "stdout") stdout() else stderr())
}

with_stamped_output <- function(expr) {
  printed <- character(0)
  value <- withCallingHandlers(
    {
      printed <- utils::capture.output(result <- expr)
      result
    },
    message = function(m) {
      user_lines("stderr", sub("\n$", "", conditionMessage(m)))
      invokeRestart("muffleMessage")
    },
    error = function(e) user_lines("stdout", printed)
  )
  user_lines("stdout", printed)
  value
}

option <- function(args, name) {
  at <- match(name, args)
  if (is.na(at) || at == length(args)) stop("missing option ", name)
  args[[at + 1L]]
}

json_string <- function(text) {
  # A JSON string literal without jsonlite, for the one message sent when it is missing.
  text <- gsub("\\\\", "\\\\\\\\", text)
  text <- gsub("\"", "\\\\\"", text)
  text <- gsub("\n", "\\\\n", text)
  paste0("\"", text, "\"")
}

args <- commandArgs(trailingOnly = TRUE)
port <- as.integer(option(args, "--port"))
spec_json <- option(args, "--spec")
con <- socketConnection("127.0.0.1", port, blocking = TRUE, open = "r+b", timeout = 3600)

send_frame <- function(kind, payload) {
  header <- c(writeBin(length(payload), raw(), size = 4L, endian = "big"), as.raw(kind))
  writeBin(c(header, payload), con)
  flush(con)
}

read_exact <- function(n) {
  out <- raw(0)
  while (length(out) < n) {
    chunk <- readBin(con, "raw", n - length(out))
    if (length(chunk) == 0L) return(NULL)
    out <- c(out, chunk)
  }
  out
}

# In a named R environment (R_LIBS* set to its library, so the site library is not on
# .libPaths()), the worker's own jsonlite still comes from the server's R.
r_library <- Sys.getenv("MODELHOST_R_LIBRARY")
worker_library <- Sys.getenv("MODELHOST_R_WORKER_LIBRARY")
if (!requireNamespace("jsonlite", quietly = TRUE) && nzchar(worker_library)) {
  try(loadNamespace("jsonlite", lib.loc = worker_library), silent = TRUE)
}
if (!isNamespaceLoaded("jsonlite")) {
  message <- paste(
    "The R package jsonlite is not installed on the server; install it",
    "(Debian: apt-get install r-cran-jsonlite) and publish again."
  )
  log_line(message)
  nonce_json <- json_string(Sys.getenv("MODELHOST_INSTANCE_NONCE"))
  send_frame(LOAD_FAILED, charToRaw(paste0("{\"message\":", json_string(message),
                                           ",\"nonce\":", nonce_json, "}")))
  quit(status = 1L)
}

to_json <- function(value) {
  as.character(jsonlite::toJSON(
    value, auto_unbox = TRUE, digits = NA, na = "null", null = "null",
    dataframe = "rows", factor = "string", POSIXt = "ISO8601", Date = "ISO8601",
    force = TRUE
  ))
}

spec <- jsonlite::fromJSON(spec_json)
nonce <- Sys.getenv("MODELHOST_INSTANCE_NONCE")
Sys.unsetenv("MODELHOST_INSTANCE_NONCE")  # user code has no business with it
setwd(spec$workdir)
log_line("instance ", spec$instance, " (pid ", Sys.getpid(), ") sourcing ", spec$file, ":",
         spec$`function`, " with ", R.version.string)
started <- Sys.time()

fail_load <- function(message, detail = "") {
  log_line("load failed: ", message)
  if (nzchar(detail)) cat(detail, "\n", file = stderr())
  body <- to_json(list(message = message, traceback = detail, nonce = nonce))
  send_frame(LOAD_FAILED, charToRaw(enc2utf8(body)))
  quit(status = 1L)
}

if (nzchar(r_library) && !dir.exists(r_library)) {
  fail_load(sprintf(paste(
    "The R library of this version's environment (%s) is not on the server any more;",
    "ask an admin to restore it, or publish again with another environment."), r_library))
}
user_env <- new.env(parent = globalenv())
if (!file.exists(spec$file)) fail_load(sprintf("File '%s' was not found in the project.", spec$file))
loaded <- tryCatch(
  { with_stamped_output(sys.source(spec$file, envir = user_env, keep.source = TRUE)); TRUE },
  error = function(e) e
)
if (!isTRUE(loaded)) {
  text <- conditionMessage(loaded)
  if (inherits(loaded, "parseError") || grepl("unexpected", text, fixed = TRUE)) {
    fail_load(sprintf("'%s' has a syntax error: %s", spec$file, text), text)
  }
  if (nzchar(r_library) && inherits(loaded, "packageNotFoundError")) {
    fail_load(sprintf(paste(
      "Sourcing '%s' needs the R package '%s', which is not in this version's R library",
      "(%s); the server's site library is not used here. Install the package into that",
      "library (R CMD INSTALL -l %s PACKAGE) and publish again."),
      spec$file, loaded$package, r_library, r_library), text)
  }
  fail_load(sprintf("Sourcing '%s' raised an error: %s", spec$file, text), text)
}
fname <- spec$`function`
if (!exists(fname, envir = user_env, inherits = FALSE)) {
  defined <- Filter(function(n) is.function(get(n, envir = user_env)), ls(user_env))
  hint <- if (length(defined)) paste0(" Functions defined there: ", paste(defined, collapse = ", "), ".") else ""
  fail_load(sprintf("'%s' has no function named '%s'.%s", spec$file, fname, hint))
}
fn <- get(fname, envir = user_env)
if (!is.function(fn)) {
  fail_load(sprintf("'%s' in '%s' is a %s, not a function; publish the name of a function.",
                    fname, spec$file, class(fn)[1]))
}

formal_args <- formals(fn)
param_names <- setdiff(names(formal_args), "...")
has_dots <- "..." %in% names(formal_args)
is_required <- vapply(param_names, function(p) identical(formal_args[[p]], quote(expr = )),
                      logical(1))
required <- param_names[is_required]
signature <- sprintf("%s(%s)", fname, paste(names(formal_args), collapse = ", "))
batching <- isTRUE(spec$batch)
if (batching && (length(required) > 1L || (!length(param_names) && !has_dots))) {
  fail_load(sprintf(paste(
    "%s cannot be a batching function: it must take one argument, the list of inputs, and",
    "return a list of results. Change the function, or publish it without a batch size",
    "(--batch-max-size; batch_max_size in the Python client)."),
    signature))
}

# The formals as JSON Schema (see signatures.py for the shape): a parameter's type is that of a
# constant default (numeric, integer, character, logical); anything else is any JSON ({}).
default_schema <- function(value) {
  empty <- structure(list(), names = character(0))
  if (!is.atomic(value) || length(value) != 1L) return(empty)
  if (is.na(value)) return(empty)
  type <- if (is.logical(value)) "boolean" else if (is.integer(value)) "integer" else
    if (is.numeric(value)) "number" else if (is.character(value)) "string" else NULL
  if (is.null(type) || (is.numeric(value) && !is.finite(value))) return(empty)
  list(type = type, default = value)
}
describe_formals <- function() {
  any_json <- structure(list(), names = character(0))
  described <- lapply(param_names, function(p) {
    required <- identical(formal_args[[p]], quote(expr = ))
    value <- if (required) NULL else tryCatch(eval(formal_args[[p]], baseenv()),
                                              error = function(e) NULL)
    list(name = p, kind = "positional_or_keyword", required = required,
         schema = if (required) any_json else default_schema(value))
  })
  if (has_dots) {  # ... takes further arguments by position and by name
    described <- c(described, list(list(name = "...", kind = "var_positional", schema = any_json),
                                   list(name = "...", kind = "var_keyword", schema = any_json)))
  }
  described
}
described <- list(format = 1L, parameters = describe_formals(),
                  returns = structure(list(), names = character(0)),
                  `$defs` = structure(list(), names = character(0)))

log_line(sprintf("ready in %.2f s: %s", as.numeric(Sys.time() - started, units = "secs"), signature))
send_frame(READY, charToRaw(enc2utf8(to_json(list(
  pid = Sys.getpid(), runtime = R.version.string, signature = signature, nonce = nonce,
  schema = described
)))))

scalar_type <- function(value) {
  if (!is.atomic(value) || length(value) != 1L) return("")
  if (is.logical(value) && is.na(value)) return("null")
  if (is.numeric(value)) return("number")
  class(value)[1]
}

simplify <- function(value) {
  # JSON -> R as in DESIGN §3: object -> named list; array -> list, or a vector when all its
  # elements are scalars of one type (null becomes NA and fits any type); null -> NA.
  if (is.null(value)) return(NA)
  if (!is.list(value)) return(value)
  value <- lapply(value, simplify)
  if (is.null(names(value)) && length(value) > 0L) {
    types <- setdiff(unique(vapply(value, scalar_type, character(1))), "null")
    if (length(types) <= 1L && !("" %in% types)) return(unlist(value))
  }
  value
}

has_non_finite <- function(value) {
  if (is.numeric(value)) return(any(is.nan(value) | is.infinite(value)))
  if (is.list(value)) return(any(vapply(value, has_non_finite, logical(1))))
  FALSE
}

call_error <- function(status, code, message) {
  structure(class = c("call_error", "error", "condition"),
            list(message = message, call = NULL, status = status, code = code))
}

# jsonlite's force = TRUE turns a value it cannot convert into something else (an environment
# into {}, a function into its source code): such values are refused instead, as docs/api.md
# says, with a message naming what was returned.
NOT_DATA <- c("symbol", "language", "expression", "externalptr", "promise", "bytecode",
              "weakref", "char", "...", "any", "pairlist")
not_data <- function(value) {
  if (is.function(value)) return("a function")
  if (is.environment(value)) return("an environment")
  if (typeof(value) %in% NOT_DATA) return(sprintf("an R %s", typeof(value)))
  if (is.list(value)) {
    for (item in value) {
      found <- not_data(item)
      if (!is.null(found)) return(found)
    }
  }
  NULL
}
has_complex <- function(value) {
  if (is.complex(value)) return(TRUE)
  if (is.list(value)) return(any(vapply(value, has_complex, logical(1))))
  FALSE
}
check_convertible <- function(value) {
  if (has_non_finite(value)) {
    stop(call_error(500L, "result_not_serializable", sprintf(
      "%s returned NaN or Inf, which JSON cannot represent; return NA (null) or a finite number instead.",
      fname)))
  }
  found <- not_data(value)
  if (!is.null(found)) {
    stop(call_error(500L, "result_not_serializable", sprintf(paste(
      "%s returned %s, which cannot be converted to JSON; return data (vectors, lists,",
      "data frames) instead."), fname, found)))
  }
  if (has_complex(value)) {
    stop(call_error(500L, "result_not_serializable", sprintf(paste(
      "%s returned complex numbers, which JSON cannot represent; return their parts",
      "(list(re = Re(x), im = Im(x))) or as.character(x) instead."), fname)))
  }
}

bind_check <- function(call_args, named) {
  problem <- NULL
  if (named) {
    unknown <- setdiff(names(call_args), param_names)
    missing <- setdiff(required, names(call_args))
    if (length(unknown) && !has_dots) {
      problem <- sprintf("unexpected argument(s) %s", paste0("'", unknown, "'", collapse = ", "))
    } else if (length(missing)) {
      problem <- sprintf("missing argument(s) %s", paste0("'", missing, "'", collapse = ", "))
    }
  } else if (length(call_args) > length(param_names) && !has_dots) {
    problem <- sprintf("%d positional arguments given, %d accepted", length(call_args),
                       length(param_names))
  } else if (length(call_args) < length(required)) {
    problem <- sprintf("%d positional arguments given, %d required", length(call_args),
                       length(required))
  }
  if (!is.null(problem)) {
    stop(call_error(400L, "invalid_arguments",
                    sprintf("The arguments do not match %s: %s.", signature, problem)))
  }
}

parse_input <- function(body) {
  # A batching function's input: the data object as a named list, or the parameters array as
  # a list, each value converted as for a call.
  request <- tryCatch(
    jsonlite::fromJSON(body, simplifyVector = FALSE),
    error = function(e) stop(call_error(400L, "bad_request", paste0(
      "Request body is not valid JSON (", conditionMessage(e), "). ", BAD_SHAPE)))
  )
  keys <- names(request)
  if (!is.list(request) || is.null(keys) || (("data" %in% keys) == ("parameters" %in% keys))) {
    stop(shape_error(keys))
  }
  value <- if ("data" %in% keys) request$data else request$parameters
  if (is.null(value)) return(list())
  if (!is.list(value)) stop(call_error(400L, "bad_request", BAD_SHAPE))
  lapply(value, simplify)
}

parse_request <- function(body) {
  request <- tryCatch(
    jsonlite::fromJSON(body, simplifyVector = FALSE),
    error = function(e) stop(call_error(400L, "bad_request", paste0(
      "Request body is not valid JSON (", conditionMessage(e), "). ", BAD_SHAPE)))
  )
  keys <- names(request)
  if (!is.list(request) || is.null(keys) || (("data" %in% keys) == ("parameters" %in% keys))) {
    stop(shape_error(keys))
  }
  if ("data" %in% keys) {
    data <- request$data
    if (is.null(data) || (length(data) && (!is.list(data) || is.null(names(data))))) {
      stop(call_error(400L, "bad_request", paste(
        "'data' must be a JSON object of keyword arguments;",
        "use 'parameters' for a list of positional arguments.")))
    }
    call_args <- lapply(data, simplify)
    bind_check(call_args, named = TRUE)
  } else {
    parameters <- request$parameters
    if (!is.null(parameters) && (!is.list(parameters) || !is.null(names(parameters)))) {
      stop(call_error(400L, "bad_request", paste(
        "'parameters' must be a JSON array of positional arguments;",
        "use 'data' for keyword arguments.")))
    }
    call_args <- lapply(parameters, simplify)
    bind_check(call_args, named = FALSE)
  }
  call_args
}

error_frame <- function(request_id, status, code, message) {
  body <- to_json(list(status = status, code = code, message = message))
  send_frame(ERROR, c(charToRaw(request_id), charToRaw(enc2utf8(body))))
}

handle <- function(payload) {
  request_id <- rawToChar(payload[1:16])
  body <- rawToChar(payload[-(1:16)])
  Encoding(body) <- "UTF-8"
  outcome <- tryCatch({
    call_args <- parse_request(body)
    start <- Sys.time()
    result <- tryCatch(with_stamped_output(do.call(fn, call_args)), error = function(e) {
      if (inherits(e, "call_error")) stop(e)
      log_line("request ", request_id, " failed: ", conditionMessage(e))
      stop(call_error(500L, "model_error",
                      sprintf("%s raised an error: %s", fname, conditionMessage(e))))
    })
    elapsed <- as.numeric(Sys.time() - start, units = "secs") * 1000
    check_convertible(result)
    encoded <- tryCatch(to_json(result), error = function(e) stop(call_error(
      500L, "result_not_serializable",
      sprintf("%s returned a value that cannot be converted to JSON: %s", fname,
              conditionMessage(e)))))
    list(elapsed = elapsed, encoded = encoded)
  }, error = function(e) e)
  if (inherits(outcome, "call_error")) {
    if (isTRUE(spec$log_requests)) {
      log_line("request ", request_id, " status=", outcome$status, " input=", substr(body, 1, 2000))
    }
    return(error_frame(request_id, outcome$status, outcome$code, outcome$message))
  }
  if (inherits(outcome, "error")) {
    return(error_frame(request_id, 500L, "model_error", conditionMessage(outcome)))
  }
  if (isTRUE(spec$log_requests)) {
    log_line("request ", request_id, " status=200 duration_ms=", sprintf("%.1f", outcome$elapsed),
             " input=", substr(body, 1, 2000), " output=", substr(outcome$encoded, 1, 2000))
  }
  time_raw <- writeBin(outcome$elapsed, raw(), size = 8L, endian = "big")
  send_frame(RESULT, c(charToRaw(request_id), time_raw, charToRaw(enc2utf8(outcome$encoded))))
}

encode_one <- function(result) {
  check_convertible(result)
  tryCatch(to_json(result), error = function(e) stop(call_error(
    500L, "result_not_serializable",
    sprintf("%s returned a value that cannot be converted to JSON: %s", fname,
            conditionMessage(e)))))
}

result_frame <- function(request_id, elapsed, encoded) {
  time_raw <- writeBin(elapsed, raw(), size = 8L, endian = "big")
  send_frame(RESULT, c(charToRaw(request_id), time_raw, charToRaw(enc2utf8(encoded))))
}

# A batching function's log lines are those of worker.py's BatchHandler: with log_requests,
# one line per call with its input and its answer; a failure names the request id(s).
batch_label <- function(ids) {
  if (length(ids) == 1L) return(paste("request", ids[[1]]))
  sprintf("a batch of %d calls (request %s and %d more)", length(ids), ids[[1]], length(ids) - 1L)
}

# What a batch's failure line ends with: its calls are run again one by one (answer_batch).
batch_again <- function(ids) if (length(ids) > 1L) "; each of its calls is run again on its own" else ""

log_batch_request <- function(call, status, answer, start) {
  if (isTRUE(spec$log_requests)) {
    took <- as.numeric(Sys.time() - start, units = "secs") * 1000
    log_line("request ", call$id, " status=", status, " duration_ms=", sprintf("%.1f", took),
             " input=", substr(call$body, 1, 2000), " output=", substr(answer, 1, 2000))
  }
}

batch_error <- function(call, status, code, message, start) {
  body <- to_json(list(status = status, code = code, message = message))
  log_batch_request(call, status, body, start)
  send_frame(ERROR, c(charToRaw(call$id), charToRaw(enc2utf8(body))))
}

frame_rows <- function(frame) {
  # One named list per row, so each caller gets its row as an object (not a one-row frame,
  # which jsonlite writes as an array of one record).
  lapply(seq_len(nrow(frame)), function(i) {
    row <- lapply(frame, function(column) column[[i]])
    lapply(row, function(v) if (is.factor(v)) as.character(v) else v)
  })
}

run_batch <- function(inputs, ids) {
  # The function's results for inputs, or a call_error saying why there are none.
  start <- Sys.time()
  results <- tryCatch(with_stamped_output(fn(inputs)), error = function(e) {
    took <- as.numeric(Sys.time() - start, units = "secs") * 1000
    log_line(batch_label(ids), " failed after ", sprintf("%.1f", took), " ms: ",
             conditionMessage(e), batch_again(ids))
    stop(call_error(500L, "model_error",
                    sprintf("%s raised an error: %s", fname, conditionMessage(e))))
  })
  elapsed <- as.numeric(Sys.time() - start, units = "secs") * 1000
  if (is.data.frame(results)) results <- frame_rows(results)
  if (is.matrix(results)) {  # one row per input (as predict gives class probabilities)
    rows <- results
    results <- lapply(seq_len(nrow(rows)), function(i) rows[i, ])
  }
  if (is.null(results) || length(results) != length(inputs)) {
    message <- sprintf(paste(
      "%s returned %d results for %d input%s; a batching function returns a list with one",
      "result per input, in order."), fname, length(results), length(inputs),
      if (length(inputs) == 1L) "" else "s")
    log_line(batch_label(ids), ": ", message, batch_again(ids))
    stop(call_error(500L, "model_error", message))
  }
  list(results = results, elapsed = elapsed)
}

answer_batch <- function(calls) {
  # calls: a list of list(id, body); answers each with its own frame.
  start <- Sys.time()
  runnable <- list()
  for (call in calls) {
    input <- tryCatch(parse_input(call$body), error = function(e) e)
    if (inherits(input, "error")) {
      batch_error(call, input$status, input$code, conditionMessage(input), start)
    } else {
      call$input <- input
      runnable[[length(runnable) + 1L]] <- call
    }
  }
  if (!length(runnable)) return(invisible())
  answer <- function(group, start) {
    outcome <- tryCatch(
      run_batch(lapply(group, function(c) c$input), vapply(group, function(c) c$id, "")),
      error = function(e) e
    )
    if (inherits(outcome, "error")) return(outcome)
    for (i in seq_along(group)) {
      encoded <- tryCatch(encode_one(outcome$results[[i]]), error = function(e) e)
      if (inherits(encoded, "error")) {
        log_line("request ", group[[i]]$id, ": ", conditionMessage(encoded))
        batch_error(group[[i]], encoded$status, encoded$code, conditionMessage(encoded), start)
      } else {
        log_batch_request(group[[i]], 200L, encoded, start)
        result_frame(group[[i]]$id, outcome$elapsed, encoded)
      }
    }
    NULL
  }
  failed <- answer(runnable, start)
  if (is.null(failed)) return(invisible())
  if (length(runnable) > 1L) {  # run_batch logged why, and that each call runs again
    for (call in runnable) {
      alone_start <- Sys.time()
      alone <- answer(list(call), alone_start)
      if (!is.null(alone)) {
        batch_error(call, alone$status, alone$code, conditionMessage(alone), alone_start)
      }
    }
  } else {
    batch_error(runnable[[1]], failed$status, failed$code, conditionMessage(failed), start)
  }
}

decode_batch <- function(payload) {
  count <- readBin(payload[1:4], "integer", size = 4L, endian = "big")
  calls <- vector("list", count)
  offset <- 4L
  for (i in seq_len(count)) {
    id <- rawToChar(payload[(offset + 1L):(offset + 16L)])
    offset <- offset + 16L
    size <- readBin(payload[(offset + 1L):(offset + 4L)], "integer", size = 4L, endian = "big")
    offset <- offset + 4L
    body <- if (size > 0L) rawToChar(payload[(offset + 1L):(offset + size)]) else ""
    Encoding(body) <- "UTF-8"
    offset <- offset + size
    calls[[i]] <- list(id = id, body = body)
  }
  calls
}

repeat {
  header <- read_exact(5L)
  if (is.null(header)) break
  length <- readBin(header[1:4], "integer", size = 4L, endian = "big")
  kind <- as.integer(header[5])
  payload <- if (length > 0L) read_exact(length) else raw(0)
  if (is.null(payload)) break
  if (kind == CALL && batching) {
    body <- rawToChar(payload[-(1:16)])
    Encoding(body) <- "UTF-8"
    answer_batch(list(list(id = rawToChar(payload[1:16]), body = body)))
  } else if (kind == CALL) {
    handle(payload)
  } else if (kind == BATCH) {
    answer_batch(decode_batch(payload))
  } else if (kind == SHUTDOWN) {
    break
  }
}
log_line("stopping")
close(con)
