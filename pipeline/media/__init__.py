"""Media: probing and decoding (frames, 16 kHz audio), faces (batched MTCNN, aligned crops), transcripts and ASR."""
