-- The score the operating point is compared with (the stacker's P(good)), beside the models' own.
-- From this version learning.threshold holds the certified threshold on that score.
ALTER TABLE requests ADD COLUMN p_good REAL;
ALTER TABLE learning ADD COLUMN p_good REAL;
