-- Where in the log each learning row's event stands (its rowid in requests or feedback). A trainer
-- restarted from a checkpoint learns again what came after it; it first deletes the rows it wrote
-- for those events, so that every event has one row, as finch stats counts them.
ALTER TABLE learning ADD COLUMN seq INTEGER;
